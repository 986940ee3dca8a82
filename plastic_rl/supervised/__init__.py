"""The shared supervised trainer and the paper's supervised tasks."""
