"""The `behest` command's subcommand groups (`behest broker`, `topics`, `dlq`, `generations`)
and its terminal view (`behest watch`): they parse and print; the logic lives beside what it
works on (`behest.local`, `behest.admin`, `behest.dlq`, `behest.fold.layout`, `behest.watching`)."""
