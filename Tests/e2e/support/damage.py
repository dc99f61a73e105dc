"""Damage to a store made the way a bad sector or another tool would: one bit, in place."""


def flip(path, offset: int) -> None:
    """Flips the lowest bit of the byte at `offset` of `path`, in place."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        assert byte, f"{path} has no byte at {offset}"
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))
