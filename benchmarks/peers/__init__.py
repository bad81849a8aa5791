"""Peer frameworks doing behest's work their own way, measured on the same topic and broker."""
