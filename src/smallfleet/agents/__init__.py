"""smallfleet.agents: hybrid agents, an orchestrator model delegating to skills and tools.

    agent = Agent("gpt-4o", skills=[Skill("triage", "Find the intent", "./specialists/triage")],
                  tools=[lookup_order], limits=Limits(max_steps=8, max_usd=0.05))
    result = await agent.run("Where is order #12345?")

Nothing heavy is imported here; models, encoders and MCP servers load when a run needs them.
"""

from smallfleet.agents.agent import Agent, Limits, RunResult, Step
from smallfleet.agents.context import ContextSource, FileSource, Retrieval, StaticText, StepOutput
from smallfleet.agents.loader import load_agent
from smallfleet.agents.skills import Skill
from smallfleet.agents.tools import FunctionTool, MCPServer, MCPTool, Tool, tool

__all__ = [
    "Agent",
    "ContextSource",
    "FileSource",
    "FunctionTool",
    "Limits",
    "MCPServer",
    "MCPTool",
    "Retrieval",
    "RunResult",
    "Skill",
    "StaticText",
    "Step",
    "StepOutput",
    "Tool",
    "load_agent",
    "tool",
]
