"""autoloss: evolutionary loss-function discovery for object detection (CSE-Autoloss)."""

__version__ = "0.1.0"
