"""simcompress.generators"""
