"""Spark schemas derived from the message field specifications (never written by hand)."""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    DataType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from schemas.fields import Field
from schemas.messages import TRIP_EVENT

_SCALAR_TYPES: dict[str, DataType] = {
    "str": StringType(),
    "enum": StringType(),
    "float": DoubleType(),
    "int": IntegerType(),
    "ts": LongType(),
}


def spark_type(spec: Field) -> DataType:
    """The Spark type of one validated field value."""
    if spec.kind == "list":
        return ArrayType(struct_type(spec.items), containsNull=False)
    return _SCALAR_TYPES[spec.kind]


def struct_type(specs: tuple[Field, ...]) -> StructType:
    """The Spark struct of normalised messages; only unconditionally required fields are non-nullable."""
    return StructType(
        [StructField(s.out_name, spark_type(s), nullable=s.required is not True) for s in specs]
    )


TRIP_EVENT_SCHEMA = struct_type(TRIP_EVENT)
