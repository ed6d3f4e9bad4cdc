"""The processor: poll the event log, apply the engine, commit state with positions."""

from audience_manager.processor.runtime import Processor, ProcessorConfig
from audience_manager.processor.service import run_processor

__all__ = ["Processor", "ProcessorConfig", "run_processor"]
