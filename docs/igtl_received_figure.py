"""Render what an OpenIGTLink client (pyigtl, standing in for 3D Slicer) receives from ``mrtherm live --igtl-port``.

    python docs/igtl_received_figure.py docs/images/igtl_received.png

A phantom treatment is sent to a live session in this process; a pyigtl client connected to its OpenIGTLink server
keeps the last ``mrtherm-temperature`` and ``mrtherm-dose`` images; the figure shows their middle slices as
received (values and the IJK-to-RAS matrix from the messages, not from the session's files).
"""

import os
import sys
import tempfile
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyigtl  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from live_tools import make_treatment, scanner_order  # noqa: E402
from mrtherm.live.igtl import DEVICE_DOSE, DEVICE_TEMPERATURE, IgtlPublisher  # noqa: E402
from mrtherm.live.session import LiveSession  # noqa: E402
from mrtherm.thermometry.params import ThermometryParams  # noqa: E402


def main(out_png):
    with tempfile.TemporaryDirectory() as tmp:
        src, _ = make_treatment(os.path.join(tmp, "dicom"), n_sonications=1, shape_zyx=(3, 64, 64), n_frames=12,
                                oblique=False)
        pub = IgtlPublisher(0)
        client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=pub.address[1])
        session = LiveSession(os.path.join(tmp, "live"), {"params": ThermometryParams()})
        session.listeners.append(pub.publish)
        for path in scanner_order(src):
            session.receive(open(path, "rb").read(), path)
        deadline = time.time() + 120
        while time.time() < deadline and session.state.frames_processed < 12:
            time.sleep(0.05)
        session.close()
        temp = client.wait_for_message(DEVICE_TEMPERATURE, timeout=10)
        dose = client.wait_for_message(DEVICE_DOSE, timeout=10)
        client.stop()
        pub.close()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), constrained_layout=True)
    for ax, msg, title, unit, kw in ((axes[0], temp, "mrtherm-temperature (last frame)", "C",
                                      dict(cmap="inferno", vmin=37, vmax=70)),
                                     (axes[1], dose, "mrtherm-dose (cumulative)", "CEM43 min (log10)",
                                      dict(cmap="viridis", vmin=-2, vmax=4))):
        img = np.asarray(msg.image, dtype=np.float64)
        mid = img[img.shape[0] // 2]
        shown = np.log10(np.where(mid > 0, mid, np.nan)) if "dose" in title else mid
        im = ax.imshow(shown, origin="lower", **kw)
        ax.set_title(f"{title}\nas received over OpenIGTLink", fontsize=9)
        ax.set_xlabel("i (x) voxel")
        ax.set_ylabel("j (y) voxel")
        fig.colorbar(im, ax=ax, label=unit, shrink=0.8)
    m = np.asarray(temp.ijk_to_world_matrix)
    fig.suptitle(f"IJK-to-RAS diagonal {np.round(np.diag(m)[:3], 2).tolist()} mm, origin "
                 f"{np.round(m[:3, 3], 1).tolist()} mm", fontsize=9)
    fig.savefig(out_png, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "igtl_received.png")
