"""The Temporal worker process: all workflows and activities, clients built once."""
