"""Lab instruments that speak ASTM E1381/E1394 (CLSI LIS1-A / LIS2-A2) instead of HL7, taken
directly over TCP, so the clinic needs no converter box in between."""
