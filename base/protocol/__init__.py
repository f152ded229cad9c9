"""Wire formats, converted in one place: V1 JSON (`v1`) and V2 JSON + binary (`v2`)."""
