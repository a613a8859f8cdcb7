"""The video task's share of the commit: its hands and objects files, written where it ran.

The driver then only writes the ``videos`` row (the commit marker): the rows of a video
never travel through the driver, which would otherwise receive every row of every video
(about a gigabyte a second with ``--vertices`` and a few dozen GPUs).
"""

from __future__ import annotations

from dataclasses import replace

from hflpipe.pipeline.common.storage import Location
from hflpipe.pipeline.output.schema import OutputMetadata
from hflpipe.pipeline.output.writer import write_video_data
from hflpipe.pipeline.run.video import VideoOutcome


def write_where_processed(outcome: VideoOutcome, out: Location, metadata: OutputMetadata
                          ) -> VideoOutcome:
    """Write a processed video's data files; returns the outcome without its tables.

    A failed outcome comes back as it is. Raises OutputError when the store refuses, which
    stops the run: a full store fails every video after it.
    """
    if outcome.hands is None or outcome.objects is None:
        return outcome
    write_video_data(out, outcome.video_id, outcome.hands, outcome.objects, metadata)
    return replace(outcome, hands=None, objects=None, data_written=True,
                   hand_rows=outcome.hands.num_rows, object_rows=outcome.objects.num_rows)
