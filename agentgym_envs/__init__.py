"""Ready tasks: each subpackage holds data generation, tool/interaction configs, reward and a train config."""
