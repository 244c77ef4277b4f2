"""Dataset Explorer: counts, balance, sizes, modes, intensities, problems and a study gallery."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from fracture.ui import loaders
from fracture.ui.context import active_context, require_manifest
from fracture.ui.gallery import gallery_section
from fracture.ui.samples import complete_label_counts
from fracture.viz.charts import (
    intensity_histogram_chart,
    label_balance_chart,
    mode_chart,
    size_distribution_chart,
)

context = active_context()
title, rescan = st.columns([5, 1], vertical_alignment="bottom")
title.title("🗂️ Dataset Explorer")
if rescan.button("🔄 Rescan", help="Read the folder, the headers and the images again "
                                   "(after files were added, removed or replaced)."):
    loaders.forget_dataset_caches()
    st.rerun()
manifest = require_manifest(context)
stats = loaders.load_dataset_stats(str(manifest.root), manifest.fingerprint(), manifest)
overall = stats.overall
st.caption(
    f"`{manifest.root}` · {manifest.layout} layout · classes: {manifest.class_names[0]} / "
    f"{manifest.class_names[1]} · fingerprint `{overall['fingerprint'][:12]}`"
)

cards = st.columns(5)
cards[0].metric("Images", f"{overall['images']:,}", border=True)
cards[1].metric("Studies", f"{overall['studies']:,}", border=True)
cards[2].metric("Patients", f"{overall['patients']:,}", border=True)
cards[3].metric(f"Positive ({manifest.class_names[1]})", f"{overall['positives']:,}",
                f"{overall['positive_rate']:.1%} of images", delta_color="off", delta_arrow="off",
                border=True)
scan_problems = manifest.problems_frame().rename(columns={"reason": "message"})
unreadable = pd.concat(  # the scan's problems are sentences: they go under "message"
    [scan_problems.assign(stage="scan", reason="listing", detail=""), stats.unreadable],
    ignore_index=True,
)[["stage", "reason", "message", "detail", "path"]].fillna("")
cards[4].metric("Problem files", f"{len(unreadable):,}", border=True,
                help="Files listed by the dataset but unreadable or inconsistent; never silently dropped.")

tab_charts, tab_gallery, tab_problems = st.tabs(["Charts", "Gallery", f"Problems ({len(unreadable)})"])
with tab_charts:
    counts = complete_label_counts(stats.by_split_body_part)
    st.plotly_chart(label_balance_chart(counts, class_names=tuple(manifest.class_names)),
                    key="explorer-balance")
    st.plotly_chart(size_distribution_chart(stats.headers), key="explorer-sizes")
    left, right = st.columns([2, 3])
    with left:
        st.plotly_chart(mode_chart(stats.modes.rename(columns={"images": "count"})), key="explorer-modes")
    with right:
        st.markdown("**Counts per split**")
        st.dataframe(stats.by_split, hide_index=True,
                     column_config={"positive_rate": st.column_config.NumberColumn(format="percent")})
        st.markdown("**Counts per body part**")
        st.dataframe(stats.by_body_part, hide_index=True,
                     column_config={"positive_rate": st.column_config.NumberColumn(format="percent")})
    histogram = loaders.load_intensity_histogram(str(manifest.root), overall["fingerprint"], manifest)
    series = {f"{name} ({int(group['images'].iloc[0])} images)": group["fraction"].to_numpy()
              for name, group in histogram.groupby("class_name", sort=False)}
    st.plotly_chart(
        intensity_histogram_chart(series, title="Pixel intensity distribution (a seeded sample of decoded images)"),
        key="explorer-intensity",
    )

with tab_gallery:
    gallery_section(manifest.frame, tuple(manifest.class_names), manifest.body_parts, key="explorer")

WHOLE_TABLE_ROWS = 200  # up to this many problems are listed whole; more go in a scrolling table and the CSV

with tab_problems:
    if unreadable.empty:
        st.success("Every listed file was found and its header read.")
    else:
        ordered = unreadable[[c for c in ("path", "stage", "reason", "message", "detail") if c in unreadable]]
        if len(ordered) <= WHOLE_TABLE_ROWS:  # a table wraps its cells: every path is read whole
            st.table(ordered.set_index("path"))
        else:
            st.dataframe(ordered, hide_index=True, width="stretch")
        st.download_button("⬇ Problems (CSV)", ordered.to_csv(index=False), file_name="problems.csv",
                           mime="text/csv", key="explorer-problems-csv")
