"""Operations: drift monitoring, the feedback loop and the retraining job."""
