"""The stage layer: one module per pipeline stage, each a typed options dataclass and ``run(options, report)``.

Run any stage from Python without the CLI (docs/architecture.md)::

    from uqseg_cli.stages import uncertainty
    result = uncertainty.run(uncertainty.UncertaintyOptions(input="samples.h5", output="unc.h5", measures=["entropy"]))
    print(result.done, result.failed)

The modules are imported on demand (``from uqseg_cli.stages import sample``), so importing one stage does not load
the models of another.
"""
