-- Whether a trigger's send step has anything to do at this tick: false when resume.sql could
-- take over an unfinished send, or plan_decide.sql could find a candidate. Each half is those
-- files' own filter loosened (plan_decide.sql's candidates without the ledger anti-join;
-- resume.sql's statuses without its as_of and retry-time tests), so a step said to be idle
-- would have planned or settled nothing; it skips the resume and the planning transaction,
-- most of an idle step's time. Keep the second half in step with plan_decide.sql.
-- Parameters: $trigger, $as_of. {eligibility}: the trigger's eligibility relation.
select
    not exists (
        select 1
        from nudge.send_ledger as ledger
        where
            ledger.trigger = $trigger
            and ledger.status in ('planned', 'sending', 'deferred', 'failed_retryable')
    )
    and not exists (
        select 1
        from {eligibility} as eligibility
        where
            $as_of <= eligibility.expires_at
            and (
                (
                    eligibility.due_at <= $as_of
                    and (
                        eligibility.exclusion_reason is null
                        or (
                            eligibility.ledger_status is null
                            and eligibility.rule_exclusion_reason in (
                                'holdout', 'control_group', 'condition_not_met'
                            )
                        )
                    )
                )
                or (
                    eligibility.ledger_status is null
                    and eligibility.rule_exclusion_reason = 'superseded'
                )
            )
    ) as idle
