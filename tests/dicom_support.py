"""DICOM files the tests make with pydicom: shared by the decoder tests (tests/data) and the batch tests (tests/serve)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import config as dicom_config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def palette_dicom_without_meta(path: Path, rows: int = 32, cols: int = 40, *, implicit: bool = True) -> Path:
    """pydicom-data's OT-PAL-8-face.dcm in miniature: PALETTE COLOR, no preamble, no file meta."""
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ramp = np.arange(256, dtype=np.uint16)
    for colour, lut in (("Red", ramp * 257), ("Green", (255 - ramp) * 257), ("Blue", np.zeros(256, np.uint16))):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", lut.astype("<u2").tobytes())
    ds.PixelData = (np.arange(rows * cols) % 256).astype(np.uint8).tobytes()
    ds.save_as(path, implicit_vr=implicit, little_endian=True, enforce_file_format=False)
    assert b"DICM" not in path.read_bytes()[:200]  # really without preamble and file meta
    return path


def mono_dicom(path: Path, *, pixel_data: bytes | None = None, patch: tuple[bytes, bytes] | None = None,
               **tags) -> Path:
    """A small 8-bit CR DICOM with file meta; ``tags`` set on it, ``patch`` replaces bytes after writing
    (a value pydicom refuses to write)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "CR"
    ds.Rows, ds.Columns = 32, 40
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixel_data if pixel_data is not None else bytes(i % 40 for i in range(32 * 40))  # no ASCII digits
    mode = dicom_config.settings.writing_validation_mode
    dicom_config.settings.writing_validation_mode = dicom_config.IGNORE
    try:
        for key, value in tags.items():
            setattr(ds, key, value)
        ds.save_as(path, enforce_file_format=True)
    finally:
        dicom_config.settings.writing_validation_mode = mode
    if patch is not None:  # a value pydicom refuses to write: written valid, then replaced in the bytes
        data = path.read_bytes()
        assert data.count(patch[0]) == 1
        path.write_bytes(data.replace(*patch))
    return path
