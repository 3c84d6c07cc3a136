AUDIT (
  name assert_referential_integrity,
  blocking true
);
/* Rows whose foreign key has no parent row: facts must point at existing dimension rows. */
SELECT child.*
FROM @this_model AS child
WHERE child.@column IS NOT NULL
  AND child.@column NOT IN (SELECT parent.@parent_column FROM @parent AS parent)
