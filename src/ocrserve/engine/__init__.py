"""The OCR engine: PP-OCR detection, angle classification and recognition on onnxruntime.

Knows nothing of HTTP, asyncio or storage: pages in, :class:`~ocrserve.types.PageResult` out.
"""

from ocrserve.engine.models import ModelSet, ModelSpec
from ocrserve.engine.pipeline import Engine
from ocrserve.engine.router import Engines, OCREngine
from ocrserve.engine.session import RuntimeOptions

__all__ = ["Engine", "Engines", "ModelSet", "ModelSpec", "OCREngine", "RuntimeOptions"]
