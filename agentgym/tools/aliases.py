"""verl class paths that resolve to agentgym classes, so a verl tool YAML loads unchanged."""

VERL_CLASS_ALIASES: dict[str, str] = {
    "verl.tools.sandbox_fusion_tools.SandboxFusionTool": "agentgym.tools.sandbox_fusion.tool.VerlSandboxFusionTool",
    "verl.tools.mcp_base_tool.MCPBaseTool": "agentgym.tools.mcp_tool.MCPTool",
    "verl.tools.mcp_search_tool.MCPSearchTool": "agentgym.tools.mcp_tool.MCPTool",
    "verl.tools.search_tool.SearchTool": "agentgym.tools.search.SearchTool",
}
