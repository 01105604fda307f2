"""entrolab: policy entropy as a first-class, measured and controlled quantity in RL for reasoning LMs."""

__version__ = "0.1.0"
