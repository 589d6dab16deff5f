"""Polling the clinic's PACS when it cannot forward: C-FIND what is new, fetch only what is missing.

Fetched instances go through the same store path as pushed ones (dicom.keeping), with the PACS
recorded as their sender.
"""
