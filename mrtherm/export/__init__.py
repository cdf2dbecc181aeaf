"""Results where clinics look: DICOM objects for the PACS (highdicom) and their sending (pynetdicom)."""
