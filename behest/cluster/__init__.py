"""Scale-out on Kafka alone: membership from the consumer group, routing, standby copies."""
