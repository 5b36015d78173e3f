"""``advaudio report`` and ``advaudio listen``."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory of report.md/.html/.json/.csv, figures/ and audio/ (created).")
@click.option("--max-clips", type=int, default=3, show_default=True,
              help="Clips in each adversarial-example figure and listening table (0: none).")
@click.option("--no-listen", is_flag=True, help="Do not write WAV files (stft views only anyway).")
@click.option("--title", default="Adversarial training report", show_default=True, help="Report heading.")
def report(run_dirs, out_dir, max_clips, no_listen, title):
    """Report of RUN_DIR…: clean accuracy per round, attack budgets before/after, figures, audio.

    Finds every metrics.json and attack-round*-*.json below each RUN_DIR and
    writes report.md, report.html, report.json and report.csv (every number,
    with the file it came from) into --out. A file that fails its checksum or
    schema check (damaged, edited, a value out of range) is skipped with a
    warning naming it; a damaged feature store named by the results is refused
    (exit status 2).
    """
    from advaudio.reporting import write_report

    md = write_report(list(run_dirs), out_dir, listen=not no_listen, max_clips=max_clips, title=title)
    for warning in json.loads(md.with_suffix(".json").read_text()).get("warnings") or []:
        click.echo(f"warning: {warning}", err=True)  # also in the report: a skipped file is never silent
    click.echo(f"numbers: {md.with_suffix('.json')}, {md.with_suffix('.csv')}")
    click.echo(f"html:    {md.with_suffix('.html')}")
    click.echo(str(md))


@click.command()
@click.argument("shard", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Directory of the WAV files.")
@click.option("--sample", type=int, default=None,
              help="Row of the shard [default: the first clip fooled within the budget].")
@click.option("--method", type=click.Choice(["phase", "griffinlim"]), default="phase", show_default=True,
              help="Phase of the inverse STFT: the clean clip's, or Griffin-Lim's estimate.")
@click.option("--store", "store_path", type=click.Path(file_okay=False), default=None,
              help="Feature store [default: the shard's, two directories up].")
@click.option("--audio-root", type=click.Path(file_okay=False), default=None,
              help="Dataset root, if it moved since featurization.")
def listen(shard, out_dir, sample, method, store_path, audio_root):
    """Turn one adversarial example of an stft-view SHARD into WAV files and print its SNR."""
    from advaudio.stages.listen import listen as run

    r = run(shard, out_dir, sample=sample, store=store_path, method=method, audio_root=audio_root)
    click.echo(f"{r.attack} round {r.round}, clip {r.clip_id} (label {r.label}, target {r.target}, "
               f"predicted {r.predicted})")
    click.echo(f"SNR {r.snr_db_waveform:.1f} dB waveform, {r.snr_db_spectrogram:.1f} dB model input "
               f"(clean re-synthesis {r.clean_resynth_snr_db:.1f} dB against the clean clip)")
    for p in (r.clean_wav, r.clean_resynth_wav, r.adversarial_wav):
        click.echo(p)
