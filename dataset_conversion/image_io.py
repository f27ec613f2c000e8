"""The one reader of image files: verify that a file is complete, then decode it.

SimpleITK's readers tolerate damaged files: a NIfTI whose gzip stream was cut off is read with the
missing voxels as zeros, a truncated ``.nii``/``.mha`` likewise, and a DICOM slice cut inside its
pixel data may still decode. Such data would then be converted, trained on or scored as if it were
real. Every image this project reads therefore goes through :func:`verify_image_file` first, which
checks the bytes on disk against what the file's own header promises:

* ``.nii.gz`` (any ``.gz``): the whole gzip stream is decompressed, so its end-of-stream marker, CRC-32
  and length trailer (ISIZE) are checked; the decompressed NIfTI must then hold what its header says;
* ``.nii`` (NIfTI-1 and -2): ``vox_offset + prod(dim) * bitpix / 8`` bytes must be present;
* ``.mha``/``.mhd`` (MetaImage): raw data must be ``prod(DimSize) * channels * element size`` bytes;
  compressed data (``CompressedData = True``) must inflate completely to exactly that size;
* ``.nrrd``/``.nhdr`` with ``raw`` or ``gzip`` encoding: the same two rules;
* DICOM: the Pixel Data element must be complete (``Rows * Columns * frames * samples * bits``) or,
  encapsulated, end with its sequence delimiter;
* ``.png``: the signature, the CRC of every chunk and a final ``IEND`` chunk.

Then the file must also decode. A file that fails is refused with :class:`DamagedImageError`, one line
``<file>: <problem>``; nothing is read as data. The module is torch-free and depends only on the
standard library, numpy, SimpleITK and pydicom, so the converters and the evaluation share it
(``nnunetv2_cipa.evaluation`` imports it from here; ``dataset_conversion`` imports nothing of ours).
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import ConversionError

CHUNK = 1 << 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")

_MET_SIZES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}
_NRRD_SIZES = {
    "signed char": 1, "int8": 1, "int8_t": 1, "uchar": 1, "unsigned char": 1, "uint8": 1, "uint8_t": 1,
    "short": 2, "short int": 2, "signed short": 2, "signed short int": 2, "int16": 2, "int16_t": 2,
    "ushort": 2, "unsigned short": 2, "unsigned short int": 2, "uint16": 2, "uint16_t": 2,
    "int": 4, "signed int": 4, "int32": 4, "int32_t": 4, "uint": 4, "unsigned int": 4, "uint32": 4,
    "uint32_t": 4, "longlong": 8, "long long": 8, "long long int": 8, "signed long long": 8,
    "signed long long int": 8, "int64": 8, "int64_t": 8, "ulonglong": 8, "unsigned long long": 8,
    "unsigned long long int": 8, "uint64": 8, "uint64_t": 8, "float": 4, "double": 8,
}


class DamagedImageError(ConversionError, ValueError):
    """An image file that is missing, incomplete or undecodable; reads ``<file>: <problem>``.

    A :class:`ConversionError` (so the converters report it like any bad input) and a ``ValueError``
    (so the evaluation reports it like any bad input too).
    """


def _damaged(path: Path, problem: str) -> DamagedImageError:
    return DamagedImageError(path, problem)


# ------------------------------------------------------------------------------------------ gzip
def _gunzip_head_and_size(path: Path, head_bytes: int) -> tuple[bytes, int]:
    """Decompress the whole gzip stream (checking CRC and ISIZE); return its head and its length."""
    head, total = b"", 0
    try:
        with gzip.open(path, "rb") as fh:
            while block := fh.read(CHUNK):
                if len(head) < head_bytes:
                    head += block[: head_bytes - len(head)]
                total += len(block)
    except EOFError:
        raise _damaged(path, "truncated gzip stream (the file was cut off)") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise _damaged(path, f"damaged gzip stream ({_first_line(exc)})") from None
    return head, total


# ----------------------------------------------------------------------------------------- NIfTI
def _nifti_expected_size(head: bytes, path: Path) -> int:
    """Bytes a NIfTI-1/-2 single file must hold: vox_offset + voxels * bitpix / 8."""
    if len(head) < 4:
        raise _damaged(path, "too short for a NIfTI header")
    for endian in "<>":
        (sizeof_hdr,) = struct.unpack(endian + "i", head[:4])
        if sizeof_hdr in (348, 540):
            break
    else:
        raise _damaged(path, "not a NIfTI file (header size is neither 348 nor 540)")
    if len(head) < sizeof_hdr:
        raise _damaged(path, f"truncated NIfTI header ({len(head)} of {sizeof_hdr} bytes)")
    if sizeof_hdr == 348:
        dims = struct.unpack(endian + "8h", head[40:56])
        (bitpix,) = struct.unpack(endian + "h", head[72:74])
        (vox_offset,) = struct.unpack(endian + "f", head[108:112])
        single_file = head[344:347] == b"n+1"
    else:
        (bitpix,) = struct.unpack(endian + "h", head[14:16])
        dims = struct.unpack(endian + "8q", head[16:80])
        (vox_offset,) = struct.unpack(endian + "q", head[168:176])
        single_file = head[4:7] == b"n+2"
    if not single_file:
        raise _damaged(path, "NIfTI header/image pair (.hdr/.img) is not supported; use a single .nii file")
    ndim = dims[0]
    if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1 : ndim + 1]) or bitpix <= 0:
        raise _damaged(path, f"invalid NIfTI header (dim {list(dims)}, bitpix {bitpix})")
    voxels = int(np.prod([int(d) for d in dims[1 : ndim + 1]], dtype=np.int64))
    return int(vox_offset) + (voxels * int(bitpix) + 7) // 8


def _verify_nifti(path: Path) -> None:
    if path.name.lower().endswith(".gz"):
        head, size = _gunzip_head_and_size(path, 540)
    else:
        with path.open("rb") as fh:
            head = fh.read(540)
        size = path.stat().st_size
    expected = _nifti_expected_size(head, path)
    if size < expected:
        raise _damaged(path, f"incomplete NIfTI: {size} bytes where the header needs {expected}")


# ------------------------------------------------------------------------------- MetaImage / NRRD
def _read_text_header(path: Path, stop) -> tuple[dict[str, str], int]:
    """``key = value`` (MetaImage) or ``key: value`` (NRRD) lines until ``stop(line, fields)``.

    Returns (fields with lower-case keys, offset of the first byte after the header).
    """
    fields: dict[str, str] = {}
    offset = 0
    with path.open("rb") as fh:
        for raw_line in fh:
            offset += len(raw_line)
            line = raw_line.decode("latin-1").rstrip("\r\n")
            key, sep, value = _split_field(line)
            if sep and not line.startswith("#"):
                fields[key.strip().lower()] = value.strip()
            if stop(line, fields):
                break
            if offset > 1 << 16:
                raise _damaged(path, "no end of header found in the first 64 KiB")
    if not fields:
        raise _damaged(path, "empty or unreadable header")
    return fields, offset


def _split_field(line: str) -> tuple[str, str, str]:
    match = re.match(r"\s*([^:=]+?)\s*(:=|=|:)\s*(.*)$", line)
    return (match.group(1), match.group(2), match.group(3)) if match else (line, "", "")


def _check_payload(path: Path, data_path: Path, offset: int, expected: int, compressed: bool) -> None:
    """The data from ``offset`` on must be ``expected`` bytes raw, or a complete stream inflating to them."""
    if not data_path.is_file():
        raise _damaged(path, f"its data file {data_path} does not exist")
    if not compressed:
        size = data_path.stat().st_size - offset
        if size < expected:
            raise _damaged(path, f"incomplete image data: {size} bytes where the header needs {expected}")
        return
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip wrapper, auto-detected
    total = 0
    try:
        with data_path.open("rb") as fh:
            fh.seek(offset)
            while block := fh.read(CHUNK):
                total += len(inflater.decompress(block))
                if inflater.eof:
                    break
            total += len(inflater.flush())
    except zlib.error as exc:
        raise _damaged(path, f"damaged compressed image data ({exc})") from None
    if not inflater.eof:
        raise _damaged(path, "truncated compressed image data (the file was cut off)")
    if total < expected:
        raise _damaged(path, f"incomplete image data: {total} bytes where the header needs {expected}")


def _verify_metaimage(path: Path) -> None:
    fields, offset = _read_text_header(path, lambda line, fields: "elementdatafile" in fields)
    try:
        dims = [int(v) for v in fields["dimsize"].split()]
        element = _MET_SIZES[fields["elementtype"].upper()]
        channels = int(fields.get("elementnumberofchannels", "1"))
        data_file = fields["elementdatafile"]
    except (KeyError, ValueError) as exc:
        raise _damaged(path, f"incomplete MetaImage header ({_first_line(exc)})") from None
    expected = int(np.prod(dims, dtype=np.int64)) * channels * element
    compressed = fields.get("compresseddata", "false").lower() == "true"
    if data_file.upper() == "LOCAL":
        _check_payload(path, path, offset, expected, compressed)
    elif data_file.upper() == "LIST" or "%" in data_file or " " in data_file:
        raise _damaged(path, f"MetaImage data spread over several files ({data_file!r}) is not supported")
    else:
        header_size = int(fields.get("headersize", "0") or 0)
        _check_payload(path, path.parent / data_file, max(header_size, 0), expected, compressed)


def _verify_nrrd(path: Path) -> None:
    fields, offset = _read_text_header(path, lambda line, fields: line == "")
    try:
        dims = [int(v) for v in fields["sizes"].split()]
        element = _NRRD_SIZES[fields["type"].lower()]
    except (KeyError, ValueError) as exc:
        raise _damaged(path, f"incomplete NRRD header ({_first_line(exc)})") from None
    encoding = fields.get("encoding", "raw").lower()
    if encoding not in ("raw", "gzip", "gz"):
        return  # text and bzip2 encodings: their decoders detect missing data themselves
    data_file = fields.get("data file") or fields.get("datafile")
    data_path, start = (path.parent / data_file, 0) if data_file else (path, offset)
    _check_payload(path, data_path, start, int(np.prod(dims, dtype=np.int64)) * element, encoding != "raw")


# ----------------------------------------------------------------------------------------- DICOM
def _is_dicom(path: Path) -> bool:
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with path.open("rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def verify_dicom_file(path: Path) -> None:
    """A DICOM image whose Pixel Data holds every frame its header announces."""
    import pydicom

    path = Path(path)
    try:
        ds = pydicom.dcmread(path, force=True)
        pixel_data = ds.get("PixelData")
    except Exception as exc:  # pydicom raises many types for damaged files
        raise _damaged(path, f"damaged DICOM file ({type(exc).__name__}: {_first_line(exc)})") from None
    if pixel_data is None:
        raise _damaged(path, "DICOM file has no pixel data (truncated, or not an image)")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        if not pixel_data.endswith(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"):
            raise _damaged(path, "truncated encapsulated pixel data (no sequence delimiter)")
        return
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise _damaged(path, f"DICOM image without valid Rows/Columns/BitsAllocated ({exc})") from None
    expected = (rows * cols * frames * samples * bits + 7) // 8
    if len(pixel_data) < expected:
        raise _damaged(
            path, f"incomplete DICOM pixel data: {len(pixel_data)} bytes where the header needs {expected}"
        )


# ------------------------------------------------------------------------------------------- PNG
def _verify_png(path: Path) -> None:
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise _damaged(path, "not a PNG file (no PNG signature)")
    pos = len(PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise _damaged(path, "truncated PNG (no IEND chunk)")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 8 + length + 4
        if end > len(data):
            raise _damaged(path, f"truncated PNG (chunk {kind.decode('latin-1')!r} is cut off)")
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(data[pos + 4 : end - 4]) != crc:
            raise _damaged(path, f"damaged PNG (CRC mismatch in chunk {kind.decode('latin-1')!r})")
        if kind == b"IEND":
            return
        pos = end


# ------------------------------------------------------------------------------------- interface
def _first_line(exc: BaseException) -> str:
    """The most specific line of an exception message (SimpleITK's run over many lines)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    # ITK messages look like "<file>:<line>:\nitk::ERROR: ... : <reason>"; keep the reason
    reason = next((ln for ln in reversed(lines) if "ERROR" in ln or "Exception" in ln), lines[-1])
    reason = reason.split(": ", 1)[-1] if reason.startswith(("itk::ERROR", "sitk::ERROR")) else reason
    return reason[:200]


def verify_image_file(path: Path) -> None:
    """Refuse (``DamagedImageError``) a missing file or one with fewer bytes than its header promises."""
    path = Path(path)
    if not path.exists():
        raise _damaged(path, "does not exist")
    if not path.is_file():
        raise _damaged(path, "is not a file")
    name = path.name.lower()
    try:
        if name.endswith(_NIFTI_SUFFIXES):
            _verify_nifti(path)
        elif name.endswith(".gz"):
            _gunzip_head_and_size(path, 0)
        elif name.endswith((".mha", ".mhd")):
            _verify_metaimage(path)
        elif name.endswith((".nrrd", ".nhdr")):
            _verify_nrrd(path)
        elif name.endswith(".png"):
            _verify_png(path)
        elif _is_dicom(path):
            verify_dicom_file(path)
    except OSError as exc:
        raise _damaged(path, f"cannot be read ({exc.strerror or exc})") from None


def read_image(path: Path, pixel_type: int | None = None) -> sitk.Image:
    """Verify ``path`` (see :func:`verify_image_file`), then read it with SimpleITK."""
    path = Path(path)
    verify_image_file(path)
    try:
        if pixel_type is None:
            return sitk.ReadImage(str(path))
        return sitk.ReadImage(str(path), pixel_type)
    except RuntimeError as exc:
        raise _damaged(path, f"cannot be read as an image ({_first_line(exc)})") from None


def read_png_array(path: Path) -> np.ndarray:
    """Verify a PNG (signature, chunk CRCs, IEND), then decode it to an array as stored."""
    from skimage.io import imread

    path = Path(path)
    verify_image_file(path)
    try:
        return np.asarray(imread(path))
    except Exception as exc:  # imageio raises many types for broken files
        raise _damaged(path, f"cannot be decoded as PNG ({type(exc).__name__}: {_first_line(exc)})") from None
