"""A tokenizer for the chapter tests that need one and no trained BPE: one id per byte, the end token 127."""


class CharTokenizer:
    """Bytes as ids, capped at 126; 127 is the end-of-text id that Chapter 6's render appends."""
    eot_id = 127

    def encode_ordinary(self, text: str) -> list[int]:
        return [min(b, 126) for b in text.encode()]

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")
