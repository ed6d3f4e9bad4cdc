"""Audience Manager: real-time audience segmentation."""

__version__ = "0.1.0"
