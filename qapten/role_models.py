"""Each role's chat model, bound to its menu of acts so that every answer is one forced act."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable, RunnableLambda

from qapten.acts import ActSpec, single_act_tool, unwrap_single_act
from qapten.errors import ConfigurationError
from qapten.local_model import is_embedded, model_text_limit
from qapten.models import ModelRef, chat_model, close_model
from qapten.orgchart import OrgChart

BoundModel = Runnable[Any, AIMessage]


class RoleModels:
    """Builds the models the chart names (once each), binds them to menus, closes them.

    The model passed in (if any) replaces the chart's default and stays the caller's to close;
    a role with its own ``model:`` keeps it.
    """

    def __init__(
        self,
        chart: OrgChart,
        model: BaseChatModel | None = None,
        *,
        callbacks: Sequence[BaseCallbackHandler] = (),
    ) -> None:
        self._chart = chart
        self._base_dir: Path | None = chart.source.parent if chart.source else None
        self._callbacks = list(callbacks)
        self._built: list[BaseChatModel] = []
        # The swarm's model, else the chart's: built once and shared by every role without its own.
        self._default = model
        if model is None and chart.model is not None:
            self._default = self._build(chart.model)

    def _build(self, ref: ModelRef) -> BaseChatModel:
        model = chat_model(ref, base_dir=self._base_dir)
        self._built.append(model)
        return model

    def bind(self, role_name: str, menu: Sequence[ActSpec]) -> BoundModel:
        """`role_name`'s model, forced to answer with exactly one act of `menu`."""
        ref = self._chart.roles[role_name].model
        model = self._default if ref is None else self._build(ref)
        if model is None:
            msg = "no model: pass model=... or set 'model:' in the org chart"
            raise ConfigurationError(msg)
        if is_embedded(model):
            # llama.cpp forces only a named function, and a tiny model cannot pick among
            # several on its own: one function that unites every act, unwrapped after.
            tool = single_act_tool(menu, max_text=model_text_limit(model))
            bound = model.bind_tools([tool], tool_choice=tool["function"]["name"])
            chain: BoundModel = bound | RunnableLambda(unwrap_single_act)
        else:
            # tool_choice "any" forces exactly one act: small models fail at free tool choice.
            chain = model.bind_tools([spec.as_openai_tool() for spec in menu], tool_choice="any")
        return chain.with_config(callbacks=self._callbacks) if self._callbacks else chain

    async def close(self) -> None:
        """Close the connections of the models built here (not the one passed in)."""
        for model in self._built:
            await close_model(model)
