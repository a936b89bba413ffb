"""Signatures: keys for people and the gate, signed statements, signed ledger heads."""
