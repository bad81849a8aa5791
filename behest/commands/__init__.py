"""The `behest` command's subcommands that have their own options and output (`behest dlq`,
`behest generations`, `behest watch`): they parse and print; the logic lives beside what it
works on (`behest.dlq`, `behest.fold.layout`, `behest.watching`)."""
