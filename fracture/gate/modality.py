"""Level (a) from the file itself: does its DICOM header say it is a projection radiograph?

A DICOM file names its modality (``Modality``, e.g. ``CR``, ``DX``, ``MR``)
and the kind of object it stores (``SOPClassUID``, e.g. "CT Image
Storage"). A fracture classifier trained on projection radiographs has
nothing to say about an MR slice or a bone scan, whatever probability it
prints, so a file that declares another modality is refused before the
model is asked, and the reason names the modality in words.

The tag is the file's own statement; pixels are judged separately by
:mod:`fracture.gate.radiograph`. A file without DICOM tags (PNG, JPEG)
passes this check untouched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

#: Projection radiography modalities (DICOM PS3.3 C.7.3.1.1.1 defined terms).
RADIOGRAPH_MODALITIES = {
    "CR": "computed radiography",
    "DX": "digital radiography",
    "RG": "radiographic imaging (conventional film/screen)",
    "MG": "mammography",
    "PX": "panoramic X-ray",
    "IO": "intra-oral radiography",
    "RF": "radio fluoroscopy",
    "XA": "X-ray angiography",
    "DF": "digital fluoroscopy (retired)",
}
#: Modalities that are not projection radiographs, with their names for the reason.
OTHER_MODALITIES = {
    "CT": "computed tomography",
    "MR": "magnetic resonance",
    "NM": "nuclear medicine",
    "US": "ultrasound",
    "PT": "positron emission tomography",
    "OT": "other (not a radiograph by its own header)",
    "SC": "secondary capture",
    "XC": "external-camera photography",
    "ES": "endoscopy",
    "OP": "ophthalmic photography",
    "OPT": "ophthalmic tomography",
    "SM": "slide microscopy",
    "GM": "general microscopy",
    "ECG": "electrocardiography",
    "EPS": "cardiac electrophysiology",
    "DOC": "a document",
    "SR": "a structured report",
    "PR": "a presentation state",
    "KO": "a key object selection",
    "RTIMAGE": "radiotherapy image",
    "RTPLAN": "radiotherapy plan",
    "RTSTRUCT": "radiotherapy structure set",
    "RTDOSE": "radiotherapy dose",
    "SEG": "a segmentation",
    "BMD": "bone densitometry (DXA)",
    "IVUS": "intravascular ultrasound",
    "OCT": "optical coherence tomography",
    "TG": "thermography",
    "HD": "haemodynamic waveform",
    "AU": "audio",
}
#: SOP classes by UID prefix, consulted when the Modality tag is missing or unknown.
#: (prefix, radiograph?, name). Longer prefixes first: the first match wins.
SOP_CLASSES = (
    ("1.2.840.10008.5.1.4.1.1.1.1.1", True, "Digital X-Ray Image Storage (processing)"),
    ("1.2.840.10008.5.1.4.1.1.1.1", True, "Digital X-Ray Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.1.2", True, "Digital Mammography X-Ray Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.1.3", True, "Digital Intra-Oral X-Ray Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.12.", True, "X-Ray Angiographic / Radiofluoroscopic Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.2", False, "CT Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.4", False, "MR Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.6", False, "Ultrasound Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.3", False, "Ultrasound Multi-frame Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.20", False, "Nuclear Medicine Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.128", False, "PET Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.130", False, "Enhanced PET Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.77", False, "Visible Light Image Storage (photograph, endoscopy, microscopy)"),
    ("1.2.840.10008.5.1.4.1.1.104", False, "Encapsulated Document Storage"),
    ("1.2.840.10008.5.1.4.1.1.481", False, "Radiotherapy Storage"),
    ("1.2.840.10008.5.1.4.1.1.1", True, "Computed Radiography Image Storage"),
)


@dataclass(frozen=True)
class ModalityVerdict:
    """What the header says: ``radiograph`` True/False, or None when it says nothing either way."""

    radiograph: bool | None
    modality: str | None
    reason: str | None


def source_tags(pairs: Iterable[tuple[str, str]] | Mapping[str, str] | None) -> dict[str, str]:
    """A decoder's ``dicom`` tags (pairs, as :class:`fracture.data.imageio.DecodedImage` holds them) as a dict."""
    if not pairs:
        return {}
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return {str(k): str(v).strip() for k, v in items if v is not None and str(v).strip()}


def classify_modality(tags: Iterable[tuple[str, str]] | Mapping[str, str] | None) -> ModalityVerdict:
    """Judge a file's DICOM ``Modality`` (then ``SOPClassUID``) tag.

    Returns:
        ``radiograph=True`` for CR, DX, RG, MG..., ``False`` with a reason naming
        the modality for CT, MR, NM, US, PT, OT, SC..., ``None`` when there is no
        tag (a PNG or JPEG) or a value this table does not know.
    """
    tags = source_tags(tags)
    modality = tags.get("Modality", "").upper() or None
    if modality in RADIOGRAPH_MODALITIES:
        return ModalityVerdict(True, modality, None)
    if modality in OTHER_MODALITIES:
        return ModalityVerdict(False, modality, f"the DICOM header says modality {modality} "
                                                f"({OTHER_MODALITIES[modality]}), not a projection radiograph")
    sop = tags.get("SOPClassUID", "")
    for prefix, radiograph, name in SOP_CLASSES:
        if sop == prefix or sop.startswith(prefix + ".") or (prefix.endswith(".") and sop.startswith(prefix)):
            if radiograph:
                return ModalityVerdict(True, modality, None)
            return ModalityVerdict(False, modality, f"the DICOM header says SOP class {name}, not a projection radiograph")
    return ModalityVerdict(None, modality, None)
