"""Specialists: small models that each learned one task type from the large model."""

from smallfleet.specialists.base import Example, Prediction, Specialist, SpecialistChatModel, load_specialist

__all__ = ["Example", "Prediction", "Specialist", "SpecialistChatModel", "load_specialist"]
