"""libffcv's JPEG decode and crop-resize, called from numba code that numba can cache.

ffcv 1.0.2 calls its C library through ctypes function objects (ffcv/libffcv.py), whose addresses numba
bakes into the machine code as constants: every pipeline stage that calls them (each image decoder's
`decode`) is "uncacheable" and JIT-compiles again in every process, 1.2 s for the train decode on 2
cores (issue 31, measured with numba's compile events), 0.3 s more for the val decode. Here the
same two C functions are declared to numba by a symbol name of our own (numba's `ExternalFunction`),
bound to their address in this process (`llvmlite.binding.add_symbol`), so the compiled code holds a
name, not an address, and numba's disk cache (`phiscale.data.numba_cache`) keeps it.

The C signatures are libffcv.cpp's (ffcv 1.0.2): `void resize(int64 x 11)` and `int imdecode(uchar*,
uint64, uint32, uint32, uchar*, uint32 x 6, bool, bool)`; pointers pass as int64 and bools as uint8,
which the x86-64 and AArch64 C calling conventions pass in the same registers. `imdecode` and
`resize_crop` below take the same arguments as ffcv's Python wrappers of the same names. Imports ffcv.
"""

from __future__ import annotations

import ctypes

import ffcv.libffcv
from llvmlite import binding
from numba import types

RESIZE_SYMBOL, IMDECODE_SYMBOL = "phiscale_libffcv_resize", "phiscale_libffcv_imdecode"
binding.add_symbol(RESIZE_SYMBOL, ctypes.cast(ffcv.libffcv.lib.resize, ctypes.c_void_p).value)
binding.add_symbol(IMDECODE_SYMBOL, ctypes.cast(ffcv.libffcv.lib.imdecode, ctypes.c_void_p).value)

_u32 = types.uint32
_resize = types.ExternalFunction(RESIZE_SYMBOL, types.void(*(types.int64,) * 11))
_imdecode = types.ExternalFunction(
    IMDECODE_SYMBOL,
    types.int32(types.int64, types.uint64, _u32, _u32, types.int64, _u32, _u32, _u32, _u32, _u32, _u32,
                types.uint8, types.uint8),
)


def resize_crop(source, start_row, end_row, start_col, end_col, destination):
    """Rows [start_row, end_row) x cols [start_col, end_col) of the HWC uint8 `source`, resized (OpenCV's
    INTER_AREA) into `destination`: ffcv.libffcv.resize_crop."""
    _resize(0, source.ctypes.data, source.shape[0], source.shape[1], start_row, end_row, start_col, end_col,
            destination.ctypes.data, destination.shape[0], destination.shape[1])


def imdecode(source, dst, source_height, source_width, crop_height, crop_width, offset_x=0, offset_y=0,
             scale_factor_num=1, scale_factor_denom=1, enable_crop=False, do_flip=False):
    """Decode the JPEG bytes `source` into `dst` (libjpeg-turbo): ffcv.libffcv.imdecode."""
    return _imdecode(source.ctypes.data, source.size, source_height, source_width, dst.ctypes.data,
                     crop_height, crop_width, offset_x, offset_y, scale_factor_num, scale_factor_denom,
                     1 if enable_crop else 0, 1 if do_flip else 0)


def use_in_ffcv_decoders() -> None:
    """FFCV's own image decoders (ffcv.fields.rgb_image: the center crop, the simple and the random-resized
    crop) call these instead of ffcv.libffcv's, so their pipeline stages are cached too."""
    import ffcv.fields.rgb_image as rgb_image

    rgb_image.imdecode, rgb_image.resize_crop = imdecode, resize_crop
