"""The fixed-width record layouts of CISAC CWR 2.1 (Rev. 8) and 2.2 (Rev. 2) that the ledger
reads and writes (positions: /work/shared/formats/CWR-LAYOUT.md, from the CISAC functional
specifications; checked against real files in tests/samples/).

A field is (name, start, size, kind, required): start is 1-based as in the specification; kinds:
    A text (left-justified)   N number (zero-padded)   S share N999v99 (05000 = 50.00 %)
    D date YYYYMMDD           T time or duration HHMMSS  F flag Y/N/U   B boolean Y/N
    L code from a lookup table (text)
required: "M" mandatory, "C" conditional (checked by the rules in cwr.py), "O" optional.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    start: int
    size: int
    kind: str
    required: str = "O"

    @property
    def end(self) -> int:
        return self.start - 1 + self.size


def _fields(*specs: tuple[str, int, int, str, str]) -> tuple[Field, ...]:
    return tuple(Field(*spec) for spec in specs)


PREFIX = _fields(
    ("record_type", 1, 3, "L", "M"),
    ("transaction_sequence", 4, 8, "N", "M"),
    ("record_sequence", 12, 8, "N", "M"),
)
PREFIX_CHARS = 19

HDR = _fields(
    ("record_type", 1, 3, "A", "M"),
    ("sender_type", 4, 2, "A", "M"),
    ("sender_id", 6, 9, "A", "M"),  # N in the specification; real senders use codes (DP1)
    ("sender_name", 15, 45, "A", "M"),
    ("edi_version", 60, 5, "A", "M"),
    ("creation_date", 65, 8, "D", "M"),
    ("creation_time", 73, 6, "T", "M"),
    ("transmission_date", 79, 8, "D", "M"),
    ("character_set", 87, 15, "L", "O"),
    ("version", 102, 3, "A", "O"),  # 2.2
    ("revision", 105, 3, "N", "O"),  # 2.2
    ("software_package", 108, 30, "A", "O"),  # 2.2
    ("software_version", 138, 30, "A", "O"),  # 2.2
)
GRH = _fields(
    ("record_type", 1, 3, "A", "M"),
    ("transaction_type", 4, 3, "L", "M"),
    ("group_id", 7, 5, "N", "M"),
    ("version_number", 12, 5, "A", "M"),
    ("batch_request", 17, 10, "N", "O"),
    ("submission_type", 27, 2, "L", "O"),
)
GRT = _fields(
    ("record_type", 1, 3, "A", "M"),
    ("group_id", 4, 5, "N", "M"),
    ("transaction_count", 9, 8, "N", "M"),
    ("record_count", 17, 8, "N", "M"),
    ("currency", 25, 3, "L", "O"),
    ("total_value", 28, 10, "N", "O"),
)
TRL = _fields(
    ("record_type", 1, 3, "A", "M"),
    ("group_count", 4, 5, "N", "M"),
    ("transaction_count", 9, 8, "N", "M"),
    ("record_count", 17, 8, "N", "M"),
)

WORK = _fields(  # NWR, REV, ISW, EXC
    ("title", 20, 60, "A", "M"),
    ("language", 80, 2, "L", "O"),
    ("submitter_work_number", 82, 14, "A", "M"),
    ("iswc", 96, 11, "A", "O"),
    ("copyright_date", 107, 8, "D", "O"),
    ("copyright_number", 115, 12, "A", "O"),
    ("distribution_category", 127, 3, "L", "M"),
    ("duration", 130, 6, "T", "C"),
    ("recorded_indicator", 136, 1, "F", "M"),
    ("text_music_relationship", 137, 3, "L", "O"),
    ("composite_type", 140, 3, "L", "O"),
    ("version_type", 143, 3, "L", "M"),
    ("excerpt_type", 146, 3, "L", "O"),
    ("music_arrangement", 149, 3, "L", "C"),
    ("lyric_adaptation", 152, 3, "L", "C"),
    ("contact_name", 155, 30, "A", "O"),
    ("contact_id", 185, 10, "A", "O"),
    ("work_type", 195, 2, "L", "O"),
    ("grand_rights", 197, 1, "B", "O"),
    ("composite_count", 198, 3, "N", "O"),
    ("printed_edition_date", 201, 8, "D", "O"),
    ("exceptional_clause", 209, 1, "F", "O"),
    ("opus_number", 210, 25, "A", "O"),
    ("catalogue_number", 235, 25, "A", "O"),
    ("priority_flag", 260, 1, "F", "O"),
)
PUBLISHER = _fields(  # SPU, OPU
    ("publisher_sequence", 20, 2, "N", "M"),
    ("ip_number", 22, 9, "A", "C"),
    ("name", 31, 45, "A", "C"),
    ("unknown_indicator", 76, 1, "F", "C"),
    ("publisher_type", 77, 2, "L", "C"),
    ("tax_id", 79, 9, "A", "O"),
    ("ipi_name_number", 88, 11, "L", "C"),
    ("agreement_number", 99, 14, "A", "O"),
    ("pr_society", 113, 3, "L", "C"),
    ("pr_ownership_share", 116, 5, "S", "C"),
    ("mr_society", 121, 3, "L", "C"),
    ("mr_ownership_share", 124, 5, "S", "C"),
    ("sr_society", 129, 3, "L", "C"),
    ("sr_ownership_share", 132, 5, "S", "C"),
    ("special_agreements", 137, 1, "L", "O"),
    ("first_recording_refusal", 138, 1, "F", "O"),
    ("filler", 139, 1, "A", "O"),
    ("ipi_base_number", 140, 13, "L", "O"),
    ("isac", 153, 14, "A", "O"),
    ("society_agreement_number", 167, 14, "A", "O"),
    ("agreement_type", 181, 2, "L", "O"),
    ("usa_license", 183, 1, "L", "O"),
)
PUBLISHER_TERRITORY = _fields(  # SPT, OPT
    ("ip_number", 20, 9, "A", "C"),
    ("constant", 29, 6, "A", "O"),
    ("pr_collection_share", 35, 5, "S", "C"),
    ("mr_collection_share", 40, 5, "S", "C"),
    ("sr_collection_share", 45, 5, "S", "C"),
    ("inclusion_exclusion", 50, 1, "L", "M"),
    ("tis_code", 51, 4, "L", "M"),
    ("shares_change", 55, 1, "B", "O"),
    ("sequence", 56, 3, "N", "O"),
)
WRITER = _fields(  # SWR, OWR
    ("ip_number", 20, 9, "A", "C"),
    ("last_name", 29, 45, "A", "C"),
    ("first_name", 74, 30, "A", "O"),
    ("unknown_indicator", 104, 1, "F", "C"),
    ("designation", 105, 2, "L", "C"),
    ("tax_id", 107, 9, "A", "O"),
    ("ipi_name_number", 116, 11, "L", "O"),
    ("pr_society", 127, 3, "L", "O"),
    ("pr_ownership_share", 130, 5, "S", "O"),
    ("mr_society", 135, 3, "L", "O"),
    ("mr_ownership_share", 138, 5, "S", "O"),
    ("sr_society", 143, 3, "L", "O"),
    ("sr_ownership_share", 146, 5, "S", "O"),
    ("reversionary", 151, 1, "F", "O"),
    ("first_recording_refusal", 152, 1, "B", "O"),
    ("work_for_hire", 153, 1, "B", "O"),
    ("filler", 154, 1, "A", "O"),
    ("ipi_base_number", 155, 13, "L", "O"),
    ("personal_number", 168, 12, "N", "O"),
    ("usa_license", 180, 1, "L", "O"),
)
WRITER_TERRITORY = _fields(  # SWT, OWT
    ("ip_number", 20, 9, "A", "C"),
    ("pr_collection_share", 29, 5, "S", "C"),
    ("mr_collection_share", 34, 5, "S", "C"),
    ("sr_collection_share", 39, 5, "S", "C"),
    ("inclusion_exclusion", 44, 1, "L", "M"),
    ("tis_code", 45, 4, "L", "M"),
    ("shares_change", 49, 1, "B", "O"),
    ("sequence", 50, 3, "N", "O"),
)
PWR = _fields(
    ("publisher_ip_number", 20, 9, "A", "M"),
    ("publisher_name", 29, 45, "A", "O"),
    ("agreement_number", 74, 14, "A", "O"),
    ("society_agreement_number", 88, 14, "A", "O"),
    ("writer_ip_number", 102, 9, "A", "C"),
    ("publisher_sequence", 111, 2, "N", "O"),  # 2.2
)
ALT = _fields(
    ("title", 20, 60, "A", "M"),
    ("title_type", 80, 2, "L", "M"),
    ("language", 82, 2, "L", "C"),
)
NAT = _fields(
    ("title", 20, 640, "A", "M"),
    ("title_type", 660, 2, "L", "M"),
    ("language", 662, 2, "L", "O"),
)
VER = _fields(  # also EWT (entire work title for excerpts), same layout
    ("title", 20, 60, "A", "M"),
    ("iswc", 80, 11, "A", "O"),
    ("language", 91, 2, "L", "O"),
    ("writer_1_last_name", 93, 45, "A", "O"),
    ("writer_1_first_name", 138, 30, "A", "O"),
    ("source", 168, 60, "A", "O"),
    ("writer_1_ipi_name_number", 228, 11, "L", "O"),
    ("writer_1_ipi_base_number", 239, 13, "L", "O"),
    ("writer_2_last_name", 252, 45, "A", "O"),
    ("writer_2_first_name", 297, 30, "A", "O"),
    ("writer_2_ipi_name_number", 327, 11, "L", "O"),
    ("writer_2_ipi_base_number", 338, 13, "L", "O"),
    ("submitter_work_number", 351, 14, "A", "O"),
)
PER = _fields(
    ("last_name", 20, 45, "A", "M"),
    ("first_name", 65, 30, "A", "O"),
    ("ipi_name_number", 95, 11, "L", "O"),
    ("ipi_base_number", 106, 13, "L", "O"),
)
NPR = _fields(
    ("name", 20, 160, "A", "C"),
    ("first_name", 180, 160, "A", "O"),
    ("ipi_name_number", 340, 11, "L", "O"),
    ("ipi_base_number", 351, 13, "L", "O"),
    ("language", 364, 2, "L", "O"),
    ("performance_language", 366, 2, "L", "C"),
    ("performance_dialect", 368, 3, "L", "C"),
)
NPN = _fields(
    ("publisher_sequence", 20, 2, "N", "M"),
    ("ip_number", 22, 9, "A", "M"),
    ("name", 31, 480, "A", "M"),
    ("language", 511, 2, "L", "O"),
)
NWN = _fields(
    ("ip_number", 20, 9, "A", "C"),
    ("last_name", 29, 160, "A", "M"),
    ("first_name", 189, 160, "A", "O"),
    ("language", 349, 2, "L", "O"),
)
NOW = _fields(
    ("last_name", 20, 160, "A", "M"),
    ("first_name", 180, 160, "A", "O"),
    ("language", 340, 2, "L", "O"),
    ("writer_position", 342, 1, "L", "O"),
)
REC = _fields(
    ("release_date", 20, 8, "D", "O"),
    ("constant_1", 28, 60, "A", "O"),
    ("release_duration", 88, 6, "T", "O"),
    ("constant_2", 94, 5, "A", "O"),
    ("album_title", 99, 60, "A", "O"),
    ("album_label", 159, 60, "A", "O"),
    ("release_catalog_number", 219, 18, "A", "O"),
    ("ean", 237, 13, "A", "O"),
    ("isrc", 250, 12, "A", "O"),
    ("recording_format", 262, 1, "L", "O"),
    ("recording_technique", 263, 1, "L", "O"),
    ("media_type", 264, 3, "L", "O"),
    ("recording_title", 267, 60, "A", "O"),  # 2.2 from here
    ("version_title", 327, 60, "A", "O"),
    ("display_artist", 387, 60, "A", "O"),
    ("record_label", 447, 60, "A", "O"),
    ("isrc_validity", 507, 20, "A", "O"),
    ("submitter_recording_id", 527, 14, "A", "O"),
)
ORN = _fields(
    ("intended_purpose", 20, 3, "L", "M"),
    ("production_title", 23, 60, "A", "C"),
    ("cd_identifier", 83, 15, "A", "C"),
    ("cut_number", 98, 4, "N", "O"),
    ("library", 102, 60, "A", "C"),
    ("bltvr", 162, 1, "A", "O"),
    ("v_isan_21", 163, 25, "A", "O"),  # 2.1: V-ISAN here; 2.2: filler
    ("production_number", 188, 12, "A", "O"),
    ("episode_title", 200, 60, "A", "O"),
    ("episode_number", 260, 20, "A", "O"),
    ("year_of_production", 280, 4, "N", "O"),
    ("avi_society", 284, 3, "N", "O"),
    ("audio_visual_number", 287, 15, "A", "O"),
    ("v_isan", 302, 26, "A", "O"),  # 2.2
    ("eidr", 328, 21, "A", "O"),  # 2.2
)
XRF = _fields(
    ("organisation_code", 20, 3, "L", "M"),
    ("identifier", 23, 14, "A", "M"),
    ("identifier_type", 37, 1, "L", "M"),
    ("validity", 38, 1, "F", "M"),
)
ACK = _fields(
    ("creation_date", 20, 8, "D", "M"),
    ("creation_time", 28, 6, "T", "M"),
    ("original_group_id", 34, 5, "N", "M"),
    ("original_transaction_sequence", 39, 8, "N", "M"),
    ("original_transaction_type", 47, 3, "L", "M"),
    ("creation_title", 50, 60, "A", "C"),
    ("submitter_creation_number", 110, 20, "A", "C"),
    ("recipient_creation_number", 130, 20, "A", "C"),
    ("processing_date", 150, 8, "D", "M"),
    ("transaction_status", 158, 2, "L", "M"),
)
MSG = _fields(
    ("message_type", 20, 1, "L", "M"),
    ("original_record_sequence", 21, 8, "N", "M"),
    ("record_type", 29, 3, "A", "M"),
    ("message_level", 32, 1, "L", "M"),
    ("validation_number", 33, 3, "A", "M"),
    ("message_text", 36, 150, "A", "M"),
)

# Detail records the ledger reads; the other valid CWR detail records are accepted and passed
# over (their content has no place in the ledger yet).
DETAIL_LAYOUTS: dict[str, tuple[Field, ...]] = {
    "SPU": PUBLISHER,
    "OPU": PUBLISHER,
    "SPT": PUBLISHER_TERRITORY,
    "OPT": PUBLISHER_TERRITORY,
    "SWR": WRITER,
    "OWR": WRITER,
    "SWT": WRITER_TERRITORY,
    "OWT": WRITER_TERRITORY,
    "PWR": PWR,
    "ALT": ALT,
    "NAT": NAT,
    "VER": VER,
    "EWT": VER,
    "PER": PER,
    "NPR": NPR,
    "NPN": NPN,
    "NWN": NWN,
    "NOW": NOW,
    "REC": REC,
    "ORN": ORN,
    "XRF": XRF,
    "MSG": MSG,
}
PASSED_OVER = frozenset({"NET", "NCT", "NVT", "INS", "IND", "COM", "ARI", "TER", "IPA", "NPA"})
WORK_HEADERS = frozenset({"NWR", "REV", "ISW", "EXC"})
TRANSACTION_HEADERS = WORK_HEADERS | {"ACK", "AGR"}
CONTROL = frozenset({"HDR", "GRH", "GRT", "TRL"})
ONLY_IN_22 = frozenset({"OPT", "OWT", "XRF"})
# The fields a version adds at the end of a record: a 2.1 record stops before them.
LENGTH_21 = {"HDR": 101, "PWR": 110, "REC": 266, "ORN": 301}


def record_length(fields: tuple[Field, ...]) -> int:
    return max(f.end for f in fields)
