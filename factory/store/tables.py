"""DDL of every table the factory writes. ARCHITECTURE.md documents them for SQL users."""

from factory.store.sample_row import samples_ddl, testset_ddl

TABLES: dict[str, str] = {
    "runs": """
        CREATE TABLE IF NOT EXISTS runs (
            run_id VARCHAR, started_at DOUBLE, seed BIGINT, n_target BIGINT, pipeline VARCHAR,
            config_json VARCHAR, status VARCHAR, finished_at DOUBLE, fingerprint_json VARCHAR)""",
    "policies": """
        CREATE TABLE IF NOT EXISTS policies (
            slot BIGINT PRIMARY KEY, target_size INTEGER, policy_id VARCHAR, industry VARCHAR, rule_ids VARCHAR[],
            rule_sources VARCHAR[], rule_groups VARCHAR[], rules VARCHAR[], num_rules INTEGER)""",
    "paraphrases": """
        CREATE TABLE IF NOT EXISTS paraphrases (
            slot BIGINT PRIMARY KEY, policy_id VARCHAR, rules VARCHAR[], model VARCHAR,
            prompt_hash VARCHAR, call_key VARCHAR)""",
    "personas": """
        CREATE TABLE IF NOT EXISTS personas (
            slot BIGINT PRIMARY KEY, user_persona VARCHAR, user_traits_json VARCHAR,
            agent_name VARCHAR, company VARCHAR, agent_persona VARCHAR, agent_traits_json VARCHAR,
            model VARCHAR, prompt_hash VARCHAR, call_key VARCHAR)""",
    "dialogues": """
        CREATE TABLE IF NOT EXISTS dialogues (
            slot BIGINT PRIMARY KEY, sample_id VARCHAR, dynamic VARCHAR, near_miss BOOLEAN,
            target_rules INTEGER[], num_turns INTEGER, scenario VARCHAR, turns_json VARCHAR,
            model VARCHAR, prompt_hash VARCHAR, call_key VARCHAR)""",
    "rule_labels": """
        CREATE TABLE IF NOT EXISTS rule_labels (
            slot BIGINT, rule_index INTEGER, label VARCHAR, ambiguity INTEGER, violated_turns INTEGER[],
            discussion VARCHAR, explanation VARCHAR, turns_json VARCHAR, model VARCHAR,
            prompt_hash VARCHAR, call_key VARCHAR, policy_index INTEGER, PRIMARY KEY (slot, rule_index))""",
    "traces": """
        CREATE TABLE IF NOT EXISTS traces (
            slot BIGINT PRIMARY KEY, mode VARCHAR, reasoning VARCHAR, explanation VARCHAR,
            verdict VARCHAR, source VARCHAR, model VARCHAR, prompt_hash VARCHAR, call_key VARCHAR)""",
    "filter_log": """
        CREATE TABLE IF NOT EXISTS filter_log (
            slot BIGINT, stage VARCHAR, reason VARCHAR, detail VARCHAR, dropped BOOLEAN)""",
    "samples": samples_ddl(),
    "slot_status": """
        CREATE TABLE IF NOT EXISTS slot_status (
            slot BIGINT PRIMARY KEY, status VARCHAR, reason VARCHAR)""",
    "estimates": """
        CREATE TABLE IF NOT EXISTS estimates (
            run_id VARCHAR, created_at DOUBLE, n_target BIGINT, source VARCHAR, estimate_json VARCHAR)""",
    "llm_failures": """
        CREATE TABLE IF NOT EXISTS llm_failures (
            failed_at DOUBLE, slot BIGINT, key VARCHAR, stage VARCHAR, provider VARCHAR, model VARCHAR,
            error VARCHAR, raw_text VARCHAR, attempts INTEGER)""",
}

# Created by `factory testset` on first use (factory/testset), so builds and older files never see it.
TESTSET_TABLES: dict[str, str] = {"testset_samples": testset_ddl()}

# Human validation (annotation/): what was pushed to which dataset, and the judgements pulled back.
# Created by `factory annotate push/pull` on first use (not by a build), so a database built before
# them still opens everywhere else.
ANNOTATION_TABLES: dict[str, str] = {
    "annotation_pushes": """
        CREATE TABLE IF NOT EXISTS annotation_pushes (
            dataset VARCHAR, sample_id VARCHAR, slot BIGINT, pushed_at DOUBLE, blind BOOLEAN,
            overlap INTEGER, PRIMARY KEY (dataset, sample_id))""",
    "human_judgements": """
        CREATE TABLE IF NOT EXISTS human_judgements (
            dataset VARCHAR, sample_id VARCHAR, slot BIGINT, annotator VARCHAR, label VARCHAR,
            violated_rules INTEGER[], violated_turns_json VARCHAR, ambiguity INTEGER, comment VARCHAR,
            pulled_at DOUBLE, PRIMARY KEY (dataset, sample_id, annotator))""",
    "human_rule_judgements": """
        CREATE TABLE IF NOT EXISTS human_rule_judgements (
            dataset VARCHAR, sample_id VARCHAR, slot BIGINT, rule_index INTEGER, annotator VARCHAR,
            label VARCHAR, violated_turns INTEGER[], llm_label VARCHAR,
            PRIMARY KEY (dataset, sample_id, rule_index, annotator))""",
}

# Columns added after a table was first released: applied to existing files on open.
MIGRATIONS: tuple[str, ...] = (
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS fingerprint_json VARCHAR",
    "ALTER TABLE policies ADD COLUMN IF NOT EXISTS target_size INTEGER",
    "ALTER TABLE samples ADD COLUMN IF NOT EXISTS rule_ids VARCHAR[]",
    "ALTER TABLE samples ADD COLUMN IF NOT EXISTS split VARCHAR",
    "ALTER TABLE rule_labels ADD COLUMN IF NOT EXISTS policy_index INTEGER",
    "ALTER TABLE traces ADD COLUMN IF NOT EXISTS verdict VARCHAR",
    "ALTER TABLE traces ADD COLUMN IF NOT EXISTS source VARCHAR",
    "ALTER TABLE traces ADD COLUMN IF NOT EXISTS model VARCHAR",
    "ALTER TABLE traces ADD COLUMN IF NOT EXISTS prompt_hash VARCHAR",
    "ALTER TABLE traces ADD COLUMN IF NOT EXISTS call_key VARCHAR",
)
