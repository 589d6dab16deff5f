"""Lab orders out: Vetmanager's orders reach the clinic's analyzers, so that the technician picks
the animal on the analyzer instead of typing its name and the order number again (typing them is
how results land on the wrong animal).

`order` is what Vetmanager sends, `orm` the HL7 ORM^O01 an analyzer reads (no I/O), `answers`
what its ACK says, `sender` the one loop per instrument that delivers the journal's queue in order.
"""
