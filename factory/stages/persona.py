"""Stage 3, personas: a templated user persona and an LLM-written agent persona (table `personas`)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from factory.recipes.names import Stage
from factory.stages.context import BuildContext
from factory.stages.llm_call import stage_call
from factory.stages.sampling import slot_rng
from factory.stages.schemas import AgentPersona


@dataclass
class Personas:
    user: str
    agent_name: str
    company: str
    agent: str


def user_persona(ctx: BuildContext, slot: int) -> tuple[str, dict]:
    rng = slot_rng(ctx.seed, slot, "user")
    traits = ctx.banks.user
    t = {
        "age": rng.randint(18, 82),
        "profession": rng.choice(traits["professions"]),
        "hobbies": rng.sample(traits["hobbies"], 2),
        "personality": rng.choice(traits["personalities"]),
        "location": rng.choice(traits["locations"]),
    }
    text = (
        f"A {t['age']}-year-old {t['profession']} from {t['location']} who enjoys {t['hobbies'][0]} "
        f"and {t['hobbies'][1]}. Personality: {t['personality']}."
    )
    return text, t


async def personas(ctx: BuildContext, slot: int, industry: str) -> Personas:
    user_text, user_traits = user_persona(ctx, slot)
    rng = slot_rng(ctx.seed, slot, "agent")
    agent_traits = {
        "industry": industry,
        "role": rng.choice(ctx.banks.agent["roles"]),
        "tone": rng.choice(ctx.banks.agent["tones"]),
        "location": rng.choice(ctx.banks.agent["locations"]),
    }
    call = await stage_call(
        ctx,
        Stage.PERSONA,
        "agent_persona",
        AgentPersona,
        slot=slot,
        temperature=ctx.recipe.persona_temperature,
        max_tokens=400,
        **agent_traits,
    )
    p: AgentPersona = call.parsed
    ctx.store.add(
        "personas",
        {
            "slot": slot,
            "user_persona": user_text,
            "user_traits_json": orjson.dumps(user_traits).decode(),
            "agent_name": p.agent_name.strip(),
            "company": p.company.strip(),
            "agent_persona": p.persona.strip(),
            "agent_traits_json": orjson.dumps(agent_traits).decode(),
        }
        | call.provenance,
    )
    return Personas(
        user=user_text, agent_name=p.agent_name.strip(), company=p.company.strip(), agent=p.persona.strip()
    )
