"""The parts of the Tile IR → Loop IR lowering (see ``passes/lower.py``)."""
