#!/usr/bin/env bash
# Snakemake runs this in a new rule environment (cnnscope.yaml): make the cnnscope code the workflow
# itself runs importable there, through a .pth file naming the folder that holds the package (a
# checkout's src/, or an install's site-packages, whose other packages then come after the
# environment's own). The workflow exports that folder as CNNSCOPE_PACKAGES.
set -euo pipefail
site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\n' "${CNNSCOPE_PACKAGES:?run by the cnnscope workflow, which sets it}" > "$site/cnnscope-workflow.pth"
python -c 'import cnnscope'
