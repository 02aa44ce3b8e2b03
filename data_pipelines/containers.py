"""Is an audio file whole? Reading container headers to tell a truncated file from a good one.

libsndfile (1.2.2, measured) does not report a file whose audio data is cut short of what its
header declares; what it does depends on the format:

  WAV / AIFF (PCM)   clamps the frame count to the bytes present and decodes them without error
  Ogg Vorbis / Opus  decodes the pages present without error (frames = the last granule), or
                     reports "malformed", or 0 frames, depending on where the cut falls
  MP3 (Xing/Info)    announces the header's frame count, then decodes fewer without error
  FLAC               announces STREAMINFO's frame count, then fails ("lost sync", or
                     "Internal psf_fseek() failed" when read in blocks)

So the headers are read here, with plain file reads and no decoder:

* `truncation(path)`, before decoding: RIFF/RIFX/RF64 WAV and AIFF/AIFC compare the `data`/`SSND`
  chunk (or COMM's frame count) with the bytes in the file, and notice a file that ends inside
  its header; an Ogg file is walked page by page and must end on a whole page that closes every
  logical stream (end-of-stream flag).
* `flac_truncation(path)`, after FLAC decoding failed: the file must end on a whole frame (its
  CRC-16 checks out) that completes STREAMINFO's frame count; otherwise the failure was the cut.
* `declares_length(path)`: whether an MP3 carries a Xing/Info/VBRI header, i.e. whether
  libsndfile's frame count is a declaration to hold the decoded length against (without one it is
  only an estimate from the file size and bitrate).

Every reason starts with "truncated: ". A file whose header cannot be parsed here gets "" (not
judged): the decoder then says what is wrong with it.
"""

from __future__ import annotations

import os
from typing import BinaryIO

TRUNCATED = "truncated"

_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # placeholders of streaming writers that never finalise a header
_WAV_PCM_TAGS = (0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE)  # PCM, float, A-law, mu-law, extensible
# AIFC compression types whose frames are a fixed number of bytes: bytes per sample, or 0 for
# "from the sample size" (the integer PCM types).
_AIFC_PCM = {
  b"NONE": 0,
  b"twos": 0,
  b"sowt": 0,
  b"raw ": 0,
  b"in24": 3,
  b"in32": 4,
  b"fl32": 4,
  b"FL32": 4,
  b"fl64": 8,
  b"FL64": 8,
}
_OGG_PAGE_HEADER = 27
_FLAC_TAIL_DEFAULT = 1 << 20  # bytes searched for the last frame when STREAMINFO gives no size
_MP3_VBR_SEARCH = 4096  # bytes after any ID3v2 tag in which a Xing/Info/VBRI header sits


def _cut(text: str) -> str:
  return f"{TRUNCATED}: {text}"


def _frames_reason(declared: int, held: int) -> str:
  return _cut(f"header says {declared} frames, file holds {held}")


def _header_cut(size: int, declared_total: int | None) -> str:
  total = f" of {declared_total} bytes" if declared_total else " bytes"
  return _cut(f"file ends inside its header, at {size}{total}")


def truncation(path: str) -> str:
  """'' when the container of `path` is whole (or not one judged here), else a reason.

  Raises:
    OSError: the file cannot be opened or read (e.g. permission denied).
  """
  with open(path, "rb") as f:
    size = os.fstat(f.fileno()).st_size
    magic = f.read(12)
    f.seek(0)
    if magic[:4] in (b"RIFF", b"RIFX", b"RF64") and magic[8:12] == b"WAVE":
      return _wav_truncation(f, size)
    if magic[:4] == b"FORM" and magic[8:12] in (b"AIFF", b"AIFC"):
      return _aiff_truncation(f, size)
    if magic[:4] == b"OggS":
      return _ogg_truncation(f, size)
  return ""


# ----------------------------------------------------------------------------------------------
# WAV (RIFF, RIFX, RF64)


def _wav_truncation(f: BinaryIO, size: int) -> str:
  head = f.read(12)
  order = "big" if head[:4] == b"RIFX" else "little"
  riff_size = int.from_bytes(head[4:8], order)
  declared_total = None if riff_size in _UNKNOWN_SIZES else riff_size + 8
  pos, block_align, tag, ds64_data = 12, 0, None, None
  while True:
    f.seek(pos)
    chunk = f.read(8)
    if len(chunk) < 8:
      # No data chunk before the end: a cut header if the file stops mid-chunk-header or short of
      # the RIFF size; otherwise the file simply has no audio (the decoder says so).
      if chunk or (declared_total and declared_total > size):
        return _header_cut(size, declared_total)
      return ""
    cid, csize = chunk[:4], int.from_bytes(chunk[4:], order)
    body = pos + 8
    if cid == b"data":
      if head[:4] == b"RF64" and csize == 0xFFFFFFFF and ds64_data is not None:
        csize = ds64_data
      elif csize in _UNKNOWN_SIZES:
        return ""  # nothing declared to compare with
      held = size - body
      if held >= csize:
        return ""
      if block_align and tag in _WAV_PCM_TAGS:
        declared, present = csize // block_align, held // block_align
        return _frames_reason(declared, present) if present < declared else ""
      return _cut(f"header says {csize} bytes of audio, file holds {held}")
    if body + csize > size:
      return _header_cut(size, declared_total)
    if cid == b"fmt " and csize >= 14:
      fmt = f.read(16)
      tag = int.from_bytes(fmt[0:2], order)
      block_align = int.from_bytes(fmt[12:14], order)
      if tag == 0xFFFE and csize >= 40:  # extensible: the real tag is in the sub-format GUID
        f.seek(body + 24)
        tag = int.from_bytes(f.read(2), order)
    elif cid == b"ds64" and csize >= 16:
      f.read(8)  # RIFF size
      ds64_data = int.from_bytes(f.read(8), "little")
    pos = body + csize + (csize & 1)  # chunks are padded to an even length


# ----------------------------------------------------------------------------------------------
# AIFF / AIFC


def _aiff_frame_bytes(comm: bytes, aifc: bool) -> int:
  """Bytes per frame from a COMM chunk body, or 0 for a compressed AIFC."""
  channels = int.from_bytes(comm[0:2], "big")
  bits = int.from_bytes(comm[6:8], "big")
  width = 0
  if aifc:
    if len(comm) < 22 or comm[18:22] not in _AIFC_PCM:
      return 0
    width = _AIFC_PCM[comm[18:22]]
  return channels * (width or -(-bits // 8))


def _aiff_truncation(f: BinaryIO, size: int) -> str:
  head = f.read(12)
  form_size = int.from_bytes(head[4:8], "big")
  declared_total = None if form_size in _UNKNOWN_SIZES else form_size + 8
  aifc = head[8:12] == b"AIFC"
  pos, comm, data_start = 12, None, None
  while comm is None or data_start is None:
    f.seek(pos)
    chunk = f.read(8)
    if len(chunk) < 8:
      if chunk or (declared_total and declared_total > size):
        return _header_cut(size, declared_total)
      return ""
    cid, csize = chunk[:4], int.from_bytes(chunk[4:], "big")
    body = pos + 8
    if cid == b"SSND":
      offset = f.read(4)
      if len(offset) < 4:
        return _header_cut(size, declared_total)
      data_start = body + 8 + int.from_bytes(offset, "big")
    elif body + csize > size:
      return _header_cut(size, declared_total)
    elif cid == b"COMM":
      comm = f.read(csize)
    pos = body + csize + (csize & 1)
  if len(comm) < 8:
    return ""
  frame_bytes = _aiff_frame_bytes(comm, aifc)
  if not frame_bytes:
    return ""
  declared = int.from_bytes(comm[2:6], "big")
  present = max(0, size - data_start) // frame_bytes
  return _frames_reason(declared, present) if present < declared else ""


# ----------------------------------------------------------------------------------------------
# Ogg (Vorbis, Opus, FLAC-in-Ogg)


def _ogg_truncation(f: BinaryIO, size: int) -> str:
  """Walks the pages: the file must end on a whole page, every stream closed by its EOS page."""
  pos, page, open_streams = 0, 0, set()
  while pos < size:
    f.seek(pos)
    head = f.read(_OGG_PAGE_HEADER)
    if len(head) < _OGG_PAGE_HEADER:
      return _cut(f"file ends inside the header of Ogg page {page}")
    if head[:4] != b"OggS":
      return ""  # not a page where one should be: corrupt or trailing junk, the decoder judges
    lacing = f.read(head[26])
    if len(lacing) < head[26]:
      return _cut(f"file ends inside the header of Ogg page {page}")
    end = pos + _OGG_PAGE_HEADER + head[26] + sum(lacing)
    if end > size:
      return _cut(f"file ends inside Ogg page {page} ({end - size} bytes short)")
    serial = int.from_bytes(head[14:18], "little")
    if head[5] & 0x02:
      open_streams.add(serial)
    if head[5] & 0x04:
      open_streams.discard(serial)
    pos, page = end, page + 1
  if open_streams:
    return _cut(f"the Ogg stream stops after page {page - 1} without its end-of-stream page")
  return ""


# ----------------------------------------------------------------------------------------------
# FLAC


def _crc_table(poly: int, width: int) -> list[int]:
  top, mask = 1 << (width - 1), (1 << width) - 1
  table = []
  for byte in range(256):
    crc = byte << (width - 8)
    for _ in range(8):
      crc = ((crc << 1) ^ poly) if crc & top else (crc << 1)
    table.append(crc & mask)
  return table


_CRC8 = _crc_table(0x07, 8)
_CRC16 = _crc_table(0x8005, 16)


def _crc8(data: bytes) -> int:
  crc = 0
  for b in data:
    crc = _CRC8[crc ^ b]
  return crc


def _crc16(data: bytes) -> int:
  crc = 0
  for b in data:
    crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ b]
  return crc


def _flac_streaminfo(f: BinaryIO) -> tuple[int, int, int, int] | None:
  """(block size, max frame size, total frames, first audio byte) of a native FLAC file."""
  if f.read(4) != b"fLaC":
    return None
  info, pos = None, 4
  while True:
    head = f.read(4)
    if len(head) < 4:
      return None
    kind, length = head[0] & 0x7F, int.from_bytes(head[1:4], "big")
    body = f.read(length)
    if len(body) < length:
      return None
    if kind == 0 and length >= 18:
      info = (
        int.from_bytes(body[0:2], "big"),
        int.from_bytes(body[7:10], "big"),
        int.from_bytes(body[13:18], "big") & ((1 << 36) - 1),
      )
    pos += 4 + length
    if head[0] & 0x80:  # last metadata block
      return None if info is None else (*info, pos)


def _flac_frame_header(data: bytes, p: int, fixed_block: int) -> tuple[int, int] | None:
  """(first sample, block size) of a frame header at data[p], or None if it is not one."""
  if len(data) < p + 6 or data[p] != 0xFF or data[p + 1] not in (0xF8, 0xF9):
    return None
  bs_code, sr_code = data[p + 2] >> 4, data[p + 2] & 0x0F
  if bs_code == 0 or sr_code == 15 or data[p + 3] >> 4 > 10 or data[p + 3] & 1:
    return None
  first = data[p + 4]
  if first == 0xFF:
    return None
  extra = next((n for n in range(7) if not (first << n) & 0x80), 7)  # UTF-8-style length
  if extra == 1 or extra > 7:
    return None
  q = p + 5 + max(0, extra - 1)
  number = first & (0x7F >> extra) if extra else first
  for b in data[p + 5 : q]:
    if b >> 6 != 0b10:
      return None
    number = (number << 6) | (b & 0x3F)
  if bs_code == 1:
    block = 192
  elif bs_code <= 5:
    block = 576 << (bs_code - 2)
  elif bs_code <= 7:
    n = bs_code - 5
    block = int.from_bytes(data[q : q + n], "big") + 1
    q += n
  else:
    block = 256 << (bs_code - 8)
  q += {12: 1, 13: 2, 14: 2}.get(sr_code, 0)
  if len(data) <= q or _crc8(data[p:q]) != data[q]:
    return None
  variable = data[p + 1] & 1
  return (number if variable else number * fixed_block), block


def _flac_frame_ends(tail: bytes, p: int) -> list[int]:
  """Where the last frame (starting at tail[p]) may end: the file's end, or before an ID3v1 tag."""
  ends = [len(tail)]
  if len(tail) - 128 > p + 2 and tail[-128:-125] == b"TAG":
    ends.append(len(tail) - 128)
  return ends


def flac_truncation(path: str) -> str:
  """'' when a FLAC file ends on a whole frame completing STREAMINFO's count, else a reason.

  Meant for a file the decoder failed on: it tells a cut file from one corrupt elsewhere.
  """
  try:
    with open(path, "rb") as f:
      info = _flac_streaminfo(f)
      if info is None:
        return ""
      block, max_frame, total, audio_start = info
      size = os.fstat(f.fileno()).st_size
      start = max(audio_start, size - (max_frame + 64 if max_frame else _FLAC_TAIL_DEFAULT))
      f.seek(start)
      tail = f.read()
  except OSError:
    return ""
  for p in range(len(tail) - 2, -1, -1):  # the last frame header in the file
    header = _flac_frame_header(tail, p, block)
    if header is None:
      continue
    first, frames = header
    whole = any(
      _crc16(tail[p : end - 2]) == int.from_bytes(tail[end - 2 : end], "big")
      for end in _flac_frame_ends(tail, p)
    )
    held = first + frames if whole else first
    if whole and (not total or held >= total):
      return ""
    return (
      _frames_reason(total, held)
      if total
      else _cut(f"the last FLAC frame is cut off, file holds {held} frames")
    )
  return ""


# ----------------------------------------------------------------------------------------------
# MP3


def declares_length(path: str) -> bool:
  """Whether an MP3 file has a Xing, Info or VBRI header, which states its frame count."""
  try:
    with open(path, "rb") as f:
      head = f.read(10)
      skip = 0
      if head[:3] == b"ID3" and len(head) == 10:
        # ID3v2 size: four 7-bit bytes; a footer adds 10 more.
        skip = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10]))
        skip += 10 if head[5] & 0x10 else 0
      f.seek(skip)
      start = f.read(_MP3_VBR_SEARCH)
  except OSError:
    return False
  return any(tag in start for tag in (b"Xing", b"Info", b"VBRI"))
