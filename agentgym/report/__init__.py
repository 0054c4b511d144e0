"""What a run leaves for a person to read: the HTML page of its trajectories (`agentgym view`)."""
