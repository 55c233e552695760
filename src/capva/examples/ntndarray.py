"""An image PV: ``<prefix>image`` is an NTNDArray whose 2-d frame changes over time.

NTNDArray is the areaDetector image type: the pixels travel flattened in a union (one member
per element type, here ``ubyteValue`` or ``ushortValue``), ``dimension[]`` gives the shape
(fastest-varying axis first), and ``attribute[]`` carries named extras such as ``ColorMode``.
:class:`capva.nt.NTNDArray` builds all that from a numpy array; p4p's client turns it back
into a numpy array of the right shape.

A thread makes frames (a bright spot circling over a gradient, with a little noise) and posts
them at ``--rate`` frames per second, at most 20: each frame is sent to every monitor, so the
rate bounds both CPU and network use.  Each frame gets ``uniqueId`` (the frame number),
``timeStamp`` and ``dataTimeStamp``, and attributes ``frame`` and ``rate``.

Run it, then::

    python -m p4p.client.cli get example:image          # prints the flattened pixels
    python -m p4p.client.cli monitor example:image

or view it (needs matplotlib)::

    from p4p.client.thread import Context
    import matplotlib.pyplot as plt
    with Context("pva") as ctxt:
        img = ctxt.get("example:image")     # numpy array, shape (height, width)
        plt.imshow(img); plt.show()
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy

from capva.nt import NTNDArray
from capva.server.thread import SharedPV

from . import make_parser, print_banner, print_pvs, serving, wait

#: the fastest frame rate allowed, whatever --rate says
MAX_RATE = 20.0


class ImageSource:
    """Makes frames of ``shape`` in ``dtype`` and posts them to ``pv`` from a thread.

    ``start()``/``stop()`` bracket the thread; ``stop()`` waits for it to end.
    """

    def __init__(self, shape: tuple[int, int], dtype: str = "uint8", rate: float = 5.0) -> None:
        self.shape = shape
        self.dtype = numpy.dtype(dtype)
        if self.dtype not in (numpy.dtype("uint8"), numpy.dtype("uint16")):
            raise ValueError(f"dtype must be uint8 or uint16, not {dtype}")
        self.rate = min(max(rate, 0.1), MAX_RATE)
        self.nt = NTNDArray()
        self.frame = 0
        self._rng = numpy.random.default_rng(0)
        h, w = shape
        self._y, self._x = numpy.mgrid[0:h, 0:w].astype(numpy.float32)
        self._background = (self._x / max(w - 1, 1)) * 0.25  # a gentle left-right gradient
        self.pv = SharedPV(initial=self._value())  # no nt=: we post complete Values
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def image(self, n: int) -> numpy.ndarray:
        """Frame ``n``: a Gaussian spot circling the centre, over the gradient, with noise."""
        h, w = self.shape
        angle = 2 * math.pi * n / 50  # one turn every 50 frames
        cx = w / 2 + 0.3 * w * math.cos(angle)
        cy = h / 2 + 0.3 * h * math.sin(angle)
        sigma2 = 2 * (0.08 * min(h, w)) ** 2
        spot = numpy.exp(-((self._x - cx) ** 2 + (self._y - cy) ** 2) / sigma2)
        level = self._background + 0.7 * spot + self._rng.uniform(0, 0.05, size=self.shape)
        top = numpy.iinfo(self.dtype).max
        return (numpy.clip(level, 0, 1) * top).astype(self.dtype)

    def _value(self) -> Any:
        """The NTNDArray Value of the current frame, stamped now."""
        now = time.time()
        V = self.nt.wrap(
            self.image(self.frame), attrib={"frame": self.frame, "rate": self.rate}, timestamp=now
        )
        V["uniqueId"] = self.frame
        V["dataTimeStamp.secondsPastEpoch"] = int(now)
        V["dataTimeStamp.nanoseconds"] = int((now % 1) * 1e9)
        return V

    def _run(self) -> None:
        period = 1.0 / self.rate
        deadline = time.monotonic()
        while True:
            deadline += period
            if self._stop.wait(max(0.0, deadline - time.monotonic())):
                return
            self.frame += 1
            self.pv.post(self._value())

    def start(self) -> None:
        """Start posting frames."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ntndarray-frames", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop posting frames and wait for the thread to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None


def main(argv: list[str] | None = None) -> int:
    """Serve the changing image until Ctrl+C (or ``--duration``)."""
    P = make_parser("python -m capva.examples.ntndarray", __doc__)
    P.add_argument("--width", type=int, default=320, help="image width in pixels (default 320)")
    P.add_argument("--height", type=int, default=240, help="image height in pixels (default 240)")
    P.add_argument("--dtype", choices=("uint8", "uint16"), default="uint8", help="pixel type (default uint8)")
    P.add_argument(
        "--rate", type=float, default=5.0, help=f"frames per second, at most {MAX_RATE:g} (default 5)"
    )
    args = P.parse_args(argv)
    name = args.prefix + "image"
    pvs = {name: f"NTNDArray {args.height}x{args.width} {args.dtype}, new frame at {args.rate:g} Hz"}
    if args.list_pvs:
        print_pvs(pvs)
        return 0
    source = ImageSource((args.height, args.width), args.dtype, args.rate)
    with serving([{name: source.pv}], args.isolate) as S:
        source.start()
        try:
            print_banner("ntndarray", pvs, S.conf(), examples=[f"monitor {name}"])
            wait(args.duration)
        finally:
            source.stop()
    print("ntndarray: stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
