#[derive(Debug, Clone, Default, PartialEq)]
pub struct CeleryEvent {}
