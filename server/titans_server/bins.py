"""An ingestion's two series along the document, per bin of tokens: the model's next-token loss (how
unexpected the text is) and the memory's write strength (how much the text moved the memory)."""

from __future__ import annotations

from titans_server.engine import Fed


class Bins:
    """Folds measured pieces into bins of ``size`` tokens as they come; the last bin, partial or not,
    closes with the document's last token. Also keeps the document's means."""

    def __init__(self, size: int, total: int):
        self.size, self.total = size, total
        self.done = 0  # bins handed out
        self._bin = [0.0, 0, 0.0, 0]  # the open bin: loss sum, losses, write sum, tokens
        self._document = [0.0, 0, 0.0, 0]

    def add(self, fed: Fed) -> dict:
        """The bins ``fed`` completed: ``first_bin`` and, per bin, ``loss`` (None where no token
        had a prediction) and ``write_strength``."""
        first, losses, writes = self.done, [], []
        for loss, write in zip(fed.losses, fed.writes):
            for sums in (self._bin, self._document):
                if loss is not None:
                    sums[0] += loss
                    sums[1] += 1
                sums[2] += write
                sums[3] += 1
            if self._bin[3] == self.size:
                self._close(losses, writes)
        if fed.tokens_done == self.total and self._bin[3]:
            self._close(losses, writes)
        return {"first_bin": first, "loss": losses, "write_strength": writes}

    def _close(self, losses: list[float | None], writes: list[float]) -> None:
        loss_sum, loss_count, write_sum, tokens = self._bin
        losses.append(loss_sum / loss_count if loss_count else None)
        writes.append(write_sum / tokens)
        self._bin = [0.0, 0, 0.0, 0]
        self.done += 1

    def means(self) -> dict:
        """The document's mean loss (nats) and mean write strength, None before any token."""
        loss_sum, loss_count, write_sum, tokens = self._document
        return {
            "mean_loss": loss_sum / loss_count if loss_count else None,
            "mean_write_strength": write_sum / tokens if tokens else None,
        }
