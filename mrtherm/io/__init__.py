"""Input metadata: image roles from vendor tags and sidecars, partner files, DICOM series (:mod:`.dicom`).

Roles and units come from metadata (``ImageType``, units) before value ranges:
a file's values can only confirm what its metadata says, or stand in when there
is no metadata at all.
"""
