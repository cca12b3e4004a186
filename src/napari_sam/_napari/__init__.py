"""napari integration (the only package that imports napari / Qt).

Guard: inside napari, triton (pulled in by ``torch._dynamo``, which torchvision imports)
must not be loaded after Qt has loaded Mesa's OpenGL: both bundle LLVM and the process
segfaults. napari-sam never uses ``torch.compile``/triton, so unless triton is already
loaded we mark it unavailable here (``sys.modules[name] = None`` makes ``import triton``
raise ImportError, which torch handles as "no triton").
"""

from __future__ import annotations

import sys

if "triton" not in sys.modules:
    sys.modules["triton"] = None  # type: ignore[assignment]
