from cdi_plugins import AlgorithmSpec, CDIError, Param, hookimpl


def run(problem, state, params, ctx):
    if state is None:
        raise CDIError("scale refines an object: put a step before it")
    xp = ctx.backend.xp                           # numpy or cupy: write the kernel once
    obj = state.obj * xp.float32(params["factor"])
    return state.replace(obj=obj.astype(xp.complex64))


@hookimpl
def cdi_register_algorithms(register):
    register(AlgorithmSpec(name="scale", kind="refiner", summary="multiply the object by a factor",
                           params=[Param("factor", "float", 1.0, "the factor", low=0, low_open=True)],
                           run=run))
