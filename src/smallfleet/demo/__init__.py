"""The demo workload: a simulated week of an online shop's support agent, generated from a seed."""

from smallfleet.demo.workload import (
    TASK_TYPES,
    TaskType,
    WorkloadCall,
    generate_workload,
    task_mix,
    to_examples,
    to_trace_records,
    write_to_store,
)

__all__ = [
    "TASK_TYPES",
    "TaskType",
    "WorkloadCall",
    "generate_workload",
    "task_mix",
    "to_examples",
    "to_trace_records",
    "write_to_store",
]
