"""mirrorc compiler passes, one concern per module. `base` holds the Pass class and the PassManager."""
