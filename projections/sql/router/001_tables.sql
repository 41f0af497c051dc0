-- The router read model. Sums are numeric, not double precision: numeric addition is exact, so the totals do not
-- depend on the order events of different partitions were folded in, and a rebuild gives byte-identical rows.

-- One row per rollout the router decided for or that has a rollout-level reward (either may come first: they are
-- on different topics). The decision and the first reward are each written once (first wins).
CREATE TABLE router_rollouts (
    rollout_id   text        PRIMARY KEY,
    task_kind    text,
    agent_type   text,
    policy       text,
    decided_at   timestamptz,
    reward       numeric,
    reward_event uuid
);

-- Per (task kind, agent type): decisions, rewarded decisions, and the Beta posterior's evidence (a reward r in
-- [0, 1] counts r as a success and 1 - r as a failure; rewards outside are clamped).
CREATE TABLE router_arms (
    task_kind   text    NOT NULL,
    agent_type  text    NOT NULL,
    assignments bigint  NOT NULL,
    rewarded    bigint  NOT NULL,
    reward_sum  numeric NOT NULL,
    successes   numeric NOT NULL,
    failures    numeric NOT NULL,
    PRIMARY KEY (task_kind, agent_type)
);
