"""banditroute: route each LLM request to the model a contextual bandit expects to
serve it best, and evaluate routing policies offline on logs."""

__version__ = "0.1.0"
