-- Empty one table before a copy fills it. {relation} is its quoted name.
truncate {relation}
