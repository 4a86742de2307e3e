"""The table of methods: one registry record per method, in the order of the docs."""

from __future__ import annotations

from kdref.records import at, cc, dml, fitnet, fsp, irg, logits, nst, pkt, rkd, sp, st

METHODS = {m.name: m for m in (
    st.METHOD, logits.METHOD, dml.METHOD,  # logits
    at.METHOD, fitnet.METHOD, nst.METHOD, fsp.METHOD,  # feature maps
    rkd.METHOD, pkt.METHOD, sp.METHOD, cc.METHOD, irg.METHOD,  # relations within the batch
)}
