"""Live treatments: frames from the scanner as they arrive, outputs after every frame, resumable after a crash.

Modules by responsibility: :mod:`.assembler` (images to complete frames),
:mod:`.treatment` (sonications and the cumulative dose in world coordinates),
:mod:`.state` (treatment state and checkpoint), :mod:`.outputs` (atomic files,
report.json), :mod:`.spool` (received images kept before acknowledgement),
:mod:`.session` (the receiving and processing threads), :mod:`.scp` (the DICOM
storage service, pynetdicom), :mod:`.folder` (watching an export folder),
:mod:`.batch` (the same treatment from a finished DICOM folder).
"""
